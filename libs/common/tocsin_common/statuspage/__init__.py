"""The public status page: component states, status updates, the public view, subscriptions
(pure; served and delivered by the edges, see docs/status-page.md)."""
