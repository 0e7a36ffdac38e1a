# pez and pez-serve in a small image: built in a Rust image, run in Debian slim as a non-root user, no compiler.
#   docker build -t pez:0.1.0 .
#   docker run --rm -p 8080:8080 -v pez-models:/models pez:0.1.0 --model smollm2-135m --host 0.0.0.0 --fetch-missing
# (Not built here: this workplace has no container runtime. deploy/k8s/ uses it; scripts/k8s_check.sh checks those.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .cargo/config.toml (AVX2/FMA for candle's quantized kernels) applies; the release profile carries no DWARF.
RUN cargo build --release --locked -p pez-cli -p pez-serve \
 && install -m 755 target/release/pez target/release/pez-serve /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 pez && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/pez pez \
 && mkdir -p /models && chown pez:pez /models
COPY --from=build /usr/local/bin/pez /usr/local/bin/pez-serve /usr/local/bin/
USER 10001:10001
ENV PEZ_MODELS=/models
EXPOSE 8080
ENTRYPOINT ["pez-serve"]
CMD ["--model", "smollm2-135m", "--host", "0.0.0.0", "--port", "8080"]
