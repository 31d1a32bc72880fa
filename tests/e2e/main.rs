//! End-to-end tests against the real local control plane and Prometheus started by
//! `tests/e2e/cluster.sh` (run them with `make test`).

mod ab;
mod admission;
mod bluegreen;
mod chaos;
mod conformance;
mod dashboards;
mod decisions;
mod faults;
mod fixture;
mod gates;
mod gatewayapi;
mod gitops;
mod harness;
mod idle;
mod install;
mod lifecycle;
mod notify;
mod operate;
mod release;
mod rollout;
mod safety;
mod sequential;
mod smoke;
mod statistics;
