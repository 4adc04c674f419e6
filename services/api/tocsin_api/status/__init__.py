"""The public status page (docs/status-page.md): served without login, built only from what
was posted for the public."""
