"""Change control: cron freeze windows, the deploy gate, the change lifecycle (pure)."""
