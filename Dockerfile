FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY iron iron
COPY control_plane control_plane
COPY sidecar sidecar
COPY lua lua
COPY bench bench
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8080
CMD ["iron-control-plane", "--host", "0.0.0.0", "--port", "8080"]
