"""The commands: each module one noun (``tocsin incidents ...``), thin over the pure parts."""
