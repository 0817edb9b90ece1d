"""Static analysis -> allowed-token masks: the vocabulary index and the monitors built on it."""
