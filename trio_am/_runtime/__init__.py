"""The Trio layer: machine lifetime, nursery, cancel scopes, awaitable waiters."""
