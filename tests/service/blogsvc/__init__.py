"""blogsvc: authors and their posts, a service on harbordb."""
