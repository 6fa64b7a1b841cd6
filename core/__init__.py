"""Loopbreak core library: everything that is not drawing widgets."""
