# One image for every ievents process of the production stack (docker-compose.yml):
#   ievents stream | sink | serve --no-sink | migrate | simulate ...
# The dependencies are the pinned ones of pyproject.toml, installed by `pip install .`:
# there is no second list of versions to keep in step.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from pyproject.toml alone (a placeholder package stands in for the code), so
# editing the code does not reinstall them; then the package itself, without touching them again.
COPY pyproject.toml ./
RUN mkdir ievents && touch ievents/__init__.py README.md \
    && pip install . \
    && pip uninstall --yes ievents \
    && rm -rf ievents README.md build ./*.egg-info

COPY README.md ./
COPY ievents ./ievents
RUN pip install --no-deps . \
    && pip check \
    && rm -rf /src/build /src/*.egg-info

# A non-root user; IEVENTS_DATA_DIR holds the stream worker's Faust state (nothing else is written there:
# in this image ClickHouse is always a server, IEVENTS_CLICKHOUSE_URL=http://...).
RUN groupadd --system --gid 10001 ievents \
    && useradd --system --uid 10001 --gid ievents --home-dir /var/lib/ievents --create-home --shell /usr/sbin/nologin ievents
ENV IEVENTS_DATA_DIR=/var/lib/ievents
WORKDIR /var/lib/ievents
USER ievents

# Query API, then the /metrics ports of the stream worker, the sink and the simulator.
EXPOSE 8000 9101 9102 9103

ENTRYPOINT ["ievents"]
CMD ["--help"]
