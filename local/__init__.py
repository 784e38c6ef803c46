"""Running o7tracker on one machine: the Google emulators and the three functions."""
