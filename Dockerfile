# pez and pez-serve in a small image: built in a Rust image, run in Debian slim as a non-root user, no compiler.
#   docker build -t pez:0.1.0 .
#   docker run --rm -p 8080:8080 -v pez-models:/models -v pez-state:/state pez:0.1.0 --model smollm2-135m \
#     --host 0.0.0.0 --api-key "$KEY" --fetch-missing
# Files and tuning jobs live in /state (a volume: they outlive the container). The base images are build
# arguments (BUILD_IMAGE, RUNTIME_IMAGE); the target `prebuilt` takes binaries a `cargo build --release` already
# made, from prebuilt/ in the build context, instead of building them (scripts/image_check.sh builds it so).
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
# .cargo/config.toml (AVX2/FMA for candle's quantized kernels) applies; the release profile carries no DWARF.
RUN cargo build --release --locked -p pez-cli -p pez-serve \
 && install -m 755 target/release/pez target/release/pez-serve /usr/local/bin/

# What either image runs as: a non-root user, its models and state folders, CA certificates.
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 pez && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/pez pez \
 && mkdir -p /models /state && chown pez:pez /models /state
USER 10001:10001
ENV PEZ_MODELS=/models
VOLUME /state
EXPOSE 8080
ENTRYPOINT ["pez-serve"]
CMD ["--model", "smollm2-135m", "--host", "0.0.0.0", "--port", "8080", "--state-dir", "/state"]

FROM runtime AS prebuilt
COPY prebuilt/pez prebuilt/pez-serve /usr/local/bin/

FROM runtime
COPY --from=build /usr/local/bin/pez /usr/local/bin/pez-serve /usr/local/bin/
