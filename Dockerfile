# serin's image: the statically linked binary that scripts/build-static.sh builds (and
# checks: no dynamic dependencies, runs without a shell), on a distroless static base:
# no shell, no package manager, non-root.
#   scripts/build-static.sh && docker build -t serin:0.1.0 .
FROM gcr.io/distroless/static-debian12:nonroot
COPY target/static/x86_64-unknown-linux-gnu/release/serin /serin
USER 65532:65532
ENTRYPOINT ["/serin"]
CMD ["run"]
