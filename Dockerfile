# One image for every rushorder process; the compose file picks the subcommand.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUSHORDER_HTTP_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rushorder ./rushorder
COPY engine ./engine
COPY api ./api
COPY workers ./workers
COPY persistence ./persistence

# A plain install: the Lua scripts are package data of engine (engine/lua/*.lua).
# Servers come from the compose file, so no [servers] extra.
RUN pip install . \
 && useradd --system --no-create-home --shell /usr/sbin/nologin rushorder

USER rushorder
EXPOSE 8000 8100 9101
ENTRYPOINT ["rushorder"]
CMD ["--help"]
