# The project's Airflow image: the official image of the pinned Airflow version plus this
# project's pinned requirements. dags/, plugins/, include/ and tools/ are mounted by
# docker-compose.yml.
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt requirements-nodeps.txt /tmp/project/
RUN pip install --no-cache-dir -r /tmp/project/requirements.txt \
 && pip install --no-cache-dir --no-deps -r /tmp/project/requirements-nodeps.txt

# include/, plugins/ and tools/ import as packages from the project root, as they do in the venv.
ENV PYTHONPATH=/opt/airflow/project
WORKDIR /opt/airflow/project
