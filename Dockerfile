FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
# The processes run as an unprivileged user that cannot change the code it runs: /app belongs to
# root, only /app/var (NEXUS_VAR_DIR: collected static files, the demo data set) is theirs.
RUN groupadd --system --gid 10001 nexus \
    && useradd --system --uid 10001 --gid nexus --home-dir /app/var --shell /usr/sbin/nologin nexus
WORKDIR /app
COPY requirements.txt scripts/llama-cmake-args ./
# llama.cpp built for x86-64-v3, not for the build machine's CPU (see the Makefile)
RUN CMAKE_ARGS="$(cat llama-cmake-args)" pip install --no-cache-dir -r requirements.txt
COPY . .
# var/media exists in the image owned by nexus: the compose volume mounted there starts as its copy
RUN DJANGO_SECRET_KEY=build-only-not-secret-build-only-not-secret python manage.py collectstatic --noinput \
    && mkdir -p var/media && chown -R nexus:nexus var
ENV HOME=/app/var
USER nexus:nexus
EXPOSE 8000
CMD ["python", "-m", "nexus.serve", "-b", "0.0.0.0", "-p", "8000"]
