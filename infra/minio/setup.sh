#!/bin/sh
# Run once by the compose `iam` service with the MinIO root credentials (the operator's, no service
# keeps them): buckets, one user per party and the policies that scope each to what its role needs.
# A hospital may read the coordinator's bucket and write (never delete) only its own.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/primia-checkpoints local/primia-mlflow
mc version enable local/primia-checkpoints
mc admin policy create local primia-coordinator /policies/coordinator.json
mc admin policy create local primia-mlflow /policies/mlflow.json
mc admin user add local primia-coordinator "$COORDINATOR_S3_SECRET"
mc admin user add local primia-mlflow "$MLFLOW_S3_SECRET"
mc admin policy attach local primia-coordinator --user primia-coordinator
mc admin policy attach local primia-mlflow --user primia-mlflow
for n in 1 2 3; do
  h="hospital-$n"
  eval secret="\$HOSPITAL_${n}_S3_SECRET"
  mc mb --ignore-existing "local/primia-h-$h"
  mc version enable "local/primia-h-$h"
  sed "s/HOSPITAL/$h/g" /policies/hospital.json.template > "/tmp/$h.json"
  mc admin policy create local "primia-$h" "/tmp/$h.json"
  mc admin user add local "primia-$h" "$secret"
  mc admin policy attach local "primia-$h" --user "primia-$h"
done
