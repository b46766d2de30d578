# Multi-stage build of the tasks service: a static-ish binary on a slim base.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tasks-server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /app tasks && mkdir -p /app/data && chown tasks /app/data
WORKDIR /app
COPY --from=build /src/target/release/tasks-server /usr/local/bin/tasks-server
USER tasks
ENV HOST=0.0.0.0 PORT=8000 DATA_DIR=/app/data APP_ENV=production
EXPOSE 8000
ENTRYPOINT ["tasks-server"]
CMD ["serve"]
