# The gateway for production: PostgreSQL via RZCP_DATABASE_URL, secrets via the environment.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY adapters ./adapters
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /srv/rzcp --create-home rzcp
COPY --from=build /install /usr/local
# The region's consent policy is data that its privacy officers review: mount a reviewed copy over it.
COPY consent /srv/rzcp/consent
USER rzcp
WORKDIR /srv/rzcp
ENV RZCP_ENVIRONMENT=production PYTHONUNBUFFERED=1 RZCP_CONSENT_POLICY_PATH=/srv/rzcp/consent/policy.yaml
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
# Run `rzcp db upgrade` once per release (a job or init container) before starting the workers.
CMD ["rzcp", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
