"""notification: delivers each page once, on the channel its person chose, through
providers behind one interface."""
