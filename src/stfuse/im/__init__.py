"""sf.im."""
