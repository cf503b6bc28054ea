FROM python:3.11-slim
WORKDIR /app
COPY . /app
# The runtime lock, exact versions with hashes, then CoreC itself with nothing resolved.
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/runtime.txt \
 && pip install --no-cache-dir --no-deps --no-build-isolation -e . \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin corec \
 && install -d -o corec -m 0700 /app/.corec
# Workers, beat, API and Flower run unprivileged; only .corec/ (beat's schedule, key files;
# 0700 as CoreC makes it, README "The data folder") is writable.
USER corec
CMD ["celery", "-A", "corec_tasks", "worker", "--loglevel", "INFO"]
