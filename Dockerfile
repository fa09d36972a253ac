# ioc API image: Python 3.11, GDAL/PROJ come with the wheels; runs as a non-root user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IOC_HOST=0.0.0.0 IOC_PORT=8000

RUN groupadd --system ioc && useradd --system --gid ioc --home-dir /srv/ioc --create-home ioc
WORKDIR /srv/ioc

COPY requirements.txt pyproject.toml README.md ./
RUN pip install -r requirements.txt
COPY ioc ioc
COPY layers layers
COPY tiles tiles
COPY api api
COPY sql sql
RUN pip install --no-deps . && mkdir -p tiles/cache && chown -R ioc:ioc /srv/ioc

USER ioc
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# Migrate (idempotent, refuses a database ahead of the code), then serve.
CMD ["sh", "-c", "ioc db migrate && exec ioc serve --host 0.0.0.0 --port 8000"]
