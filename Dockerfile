FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e . \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin corec \
 && mkdir -p /app/.corec && chown corec /app/.corec
# Workers, beat, API and Flower run unprivileged; only .corec/ (beat's schedule) is writable.
USER corec
CMD ["celery", "-A", "corec_tasks", "worker", "--loglevel", "INFO"]
