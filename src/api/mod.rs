//! The custom resources serin serves (API group `serin.dev`, version `v1alpha1`).
