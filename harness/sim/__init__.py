"""The discrete-event simulator: an event heap with a virtual clock driving the dispatch layer's objects."""
