# ioc API image: Python 3.11, GDAL/PROJ come with the wheels; runs as the unprivileged user
# ioc, which owns nothing but the folders the server writes (docs/security.md, "Who runs what").
FROM python:3.11-slim-bookworm

# PYTHONPATH: ioc is imported from /srv/ioc, so its project folder (sql/, tiles/cache, var/) is
# /srv/ioc rather than site-packages.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/srv/ioc \
    IOC_HOST=0.0.0.0 IOC_PORT=8000

RUN groupadd --system ioc && useradd --system --gid ioc --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin ioc
WORKDIR /srv/ioc

COPY requirements.txt pyproject.toml README.md ./
RUN pip install -r requirements.txt
COPY ioc ioc
COPY layers layers
COPY tiles tiles
COPY api api
COPY sql sql
# The code stays root's (the server cannot change it); the tile cache and query-job folders
# (volumes in docker-compose.yml) are the server's only.
RUN pip install --no-deps . && mkdir -p tiles/cache var/query-jobs \
    && chown ioc:ioc tiles/cache var/query-jobs && chmod 700 tiles/cache var/query-jobs

USER ioc
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# Migrate (idempotent, refuses a database ahead of the code), then serve.
CMD ["sh", "-c", "ioc db migrate && exec ioc serve --host 0.0.0.0 --port 8000"]
