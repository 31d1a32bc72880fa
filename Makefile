# The two commands: `make demo` runs a rollout on a local control plane it sets up,
# `make test` runs every test. Both install what a fresh machine needs.
.PHONY: demo test bench chaos crds

demo:
	scripts/demo.sh

test:
	scripts/test.sh

crds:
	cargo run --quiet -- crds > /dev/null && SERIN_UPDATE_CRDS=1 cargo test --quiet --test crd_sync
	cp crds/canary.yaml crds/metrictemplate.yaml crds/alertprovider.yaml deploy/chart/crds/

bench:
	cargo run --release --quiet -- bench decisions --seed 42

chaos:
	scripts/chaos.sh
