# syntax=docker/dockerfile:1
# Build: docker build -t referral-sync .
# Run:   docker run -p 8080:8080 -v referral-data:/data referral-sync

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock change.
# A production build: without the `demo` feature, so the CRM sandbox (crm-sandbox/) is not in it.
COPY Cargo.toml Cargo.lock ./
COPY crm-sandbox/Cargo.toml crm-sandbox/Cargo.toml
COPY migrations migrations
RUN mkdir -p src config benches crm-sandbox/src \
 && echo 'fn main() {}' > src/main.rs \
 && for b in ingest funnel writeback process stalled console; do cp src/main.rs benches/$b.rs; done \
 && touch src/lib.rs config/default.toml crm-sandbox/src/lib.rs \
 && cargo build --release --locked --no-default-features --bin referral-sync \
 && rm -rf src config target/release/.fingerprint/referral-sync-*
COPY config config
# Where the page templates live (src/web/…), read when the binary is compiled.
COPY askama.toml ./
COPY src src
RUN cargo build --release --locked --no-default-features --bin referral-sync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin referral-sync \
 && mkdir -p /data && chown referral-sync /data
WORKDIR /app
COPY --from=build /app/target/release/referral-sync /usr/local/bin/referral-sync
COPY config config
ENV REFERRAL_SYNC__SERVER__BIND=0.0.0.0:8080 \
    REFERRAL_SYNC__TELEMETRY__FORMAT=json \
    DATABASE_URL=sqlite:///data/referral-sync.db
VOLUME /data
EXPOSE 8080
USER referral-sync
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["referral-sync", "healthcheck"]
ENTRYPOINT ["referral-sync"]
CMD ["serve"]
