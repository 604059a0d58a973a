"""The pyfunc as MLflow "models from code": this file is copied into the logged model and run at load
time, so the model holds readable code and safetensors weights, never a pickle (primia lets no pickle
cross a trust boundary)."""

from mlflow.models import set_model

from primia.registry.pyfunc import ImageClassifier

set_model(ImageClassifier())
