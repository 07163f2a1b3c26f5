# Prefect server and the GPU pool's docker worker of the compose stack.
FROM prefecthq/prefect:3.8.8-python3.11

RUN pip install --no-cache-dir "prefect-docker==0.7.4" "fastapi>=0.139,<0.151" \
    && useradd --uid 1000 --create-home prefect
USER 1000:1000
