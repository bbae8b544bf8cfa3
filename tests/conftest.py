pytest_plugins = ["harbordb.testing.plugin"]
