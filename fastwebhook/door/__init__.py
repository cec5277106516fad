"""One workflow's door: who may send, is it signed, what it says, have we seen it."""
