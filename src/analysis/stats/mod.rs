//! Statistical comparison of canary and primary samples.
