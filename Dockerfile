# The project's Airflow image: the official image of the pinned Airflow version plus this
# project's pinned requirements. dags/, plugins/, include/ and tools/ are mounted by
# docker-compose.yml. TensorFlow (tensorflow-cpu) has Linux wheels for x86_64 only, so the image
# is built for linux/amd64 (`platform:` in docker-compose.yml; emulated on ARM hosts).
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt requirements-nodeps.txt /tmp/project/
RUN pip install --no-cache-dir -r /tmp/project/requirements.txt \
 && pip install --no-cache-dir --no-deps -r /tmp/project/requirements-nodeps.txt

# The mount points of docker-compose.yml's named volumes (and the project dir above two of them),
# owned by the airflow user and group 0, group-writable like the base image's own dirs so any
# AIRFLOW_UID in group 0 can write. Docker copies a mount point's owner and mode into a new,
# empty named volume; without these the volumes would be root-owned 0755, unwritable to Airflow.
# tests/test_compose.py reads this line to emulate the volumes.
USER root
RUN install -d -o 50000 -g 0 -m 0775 /opt/airflow/project /opt/airflow/project/build \
    /opt/airflow/project/data /opt/airflow/passwords /opt/airflow/logs
USER 50000

# include/, plugins/ and tools/ import as packages from the project root, as they do in the venv.
ENV PYTHONPATH=/opt/airflow/project
WORKDIR /opt/airflow/project
