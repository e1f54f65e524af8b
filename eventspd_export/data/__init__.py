"""Event data: windows, the simulator, dataset readers, event files, query sampling."""
