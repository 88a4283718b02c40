# One image for every service of docker-compose.yml (`--target bench` adds locust).
FROM python:3.11-slim AS app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY iron iron
COPY control_plane control_plane
COPY sidecar sidecar
COPY lua lua
COPY bench bench
# Editable, as in development: the sidecar reads its Lua scripts from lua/ beside its package.
# /var/lib/iron-cage is where the seed service leaves the agents' IC tokens for the sidecars.
RUN pip install --no-cache-dir -e . \
    && mkdir -p /var/lib/iron-cage && chown nobody /var/lib/iron-cage
USER nobody
EXPOSE 8080
CMD ["iron-control-plane", "--host", "0.0.0.0", "--port", "8080"]

FROM app AS bench
USER root
RUN pip install --no-cache-dir -e ".[bench]"
USER nobody
EXPOSE 8089
CMD ["locust", "-f", "bench/locustfiles", "--web-host", "0.0.0.0", "--web-port", "8089"]
