FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_SECRET_KEY=build-only-not-secret-build-only-not-secret python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["python", "-m", "nexus.serve", "-b", "0.0.0.0", "-p", "8000"]
