//! Wiegand 26/34 frames and keypad keys from a reader's D0/D1 pulses.
