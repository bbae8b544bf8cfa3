"""Harbor Commerce: a catalog with stock, reservations and orders, built on harbordb.

The worked example of a service using harbordb through its public API only:
its own models and `Base` (`harbor_commerce.models`), repositories, a unit of
work subclass with roles for row-level security (`harbor_commerce.uow`), read
models, the stock inventory, the reservation sweeper and a catalog cache.
harbordb never imports this package.
"""
