"""localaws' own implementation of SageMaker's built-in ``image-classification`` (CPU only).

Commands (the container contract that localaws runs, mirroring SageMaker's ``/opt/ml``)::

    python -m localaws.algorithms.image_classification train --ml-root DIR
    python -m localaws.algorithms.image_classification serve --model-dir DIR \\
        [--host 127.0.0.1] [--port 8080] [--threads 1]

Training
--------
Reads ``DIR/input/config/hyperparameters.json`` (string values), ``inputdataconfig.json`` and
the channels ``train``, ``validation``, ``train_lst``, ``validation_lst`` under
``DIR/input/data`` (images + one ``.lst`` per lst channel: ``index<TAB>label<TAB>path``, path
relative to the image channel; content type ``application/x-image``; see ``data``). Writes:

- ``DIR/model/``: the model directory below (localaws tars it into ``model.tar.gz``);
- ``DIR/output/metrics.json``: the last epoch's ``train:accuracy``, ``train:loss``,
  ``validation:accuracy``, ``validation:loss`` (+ ``*:top_k_accuracy_<k>`` with ``top_k``);
- on failure ``DIR/output/failure``: one line, ``ClientError: ...`` (bad hyperparameter,
  channel or data) or ``AlgorithmError: ...`` (our fault), and exit code 1.

stdout, one flushed line each: start-up (versions, threads), hyperparameters, every default
used, every "accepted, no effect here" note, per-channel image and class counts, the network,
then per epoch in the built-in's style ``Epoch[3] Train-accuracy=0.812500``,
``Epoch[3] Train-cross_entropy=...``, ``Epoch[3] Time cost=1.234``,
``Epoch[3] Validation-accuracy=0.790000``, ``Epoch[3] Validation-cross_entropy=...``, and
a final ``Training complete: ...`` line. SIGTERM/SIGINT stop training at once (exit 143/130,
no model written, no failure file). Deterministic for a given ``seed`` on one machine.

Model directory (``format_version`` 1)
--------------------------------------
- ``model.onnx``: input ``data`` float32 ``[batch, C, H, W]`` raw pixels 0-255 (RGB, or grey
  for C=1), dynamic batch; output ``probabilities`` float32 ``[batch, num_classes]``
  (softmax). Normalisation ``(x/255 - mean)/std`` is inside the graph.
- ``model.json``: ``format_version``, ``algorithm``, ``architecture`` (``fastnet``,
  ``cifar-resnet-<depth>`` or ``resnet-<depth>``), ``num_layers``, ``num_classes``,
  ``image_shape``, ``preprocessing`` (``resize``, ``color``, per-channel ``mean``/``std`` of
  the training pixels in 0-1 units, ``normalisation_in_graph``: true), ``onnx`` (file,
  input/output names, ``max_abs_diff_vs_torch`` measured at export), ``state_dict``,
  ``epochs``, ``epochs_run``, ``stopped_early``, ``metrics``, ``seed``, ``hyperparameters``
  (effective values), ``recipe``, ``training_seconds``, ``created``, ``torch_version``.
- ``model.pt``: the torch ``state_dict`` (for ``model.build``); ``checkpoint-epoch-NNNN.pt``
  every ``checkpoint_frequency`` epochs when asked.

Serving (see ``serve``): ``GET /ping``; ``POST /invocations`` with one PNG/JPEG
(``application/x-image``, ``image/png``, ``image/jpeg``) -> JSON list of probabilities in
label order; images are converted and resized exactly as in training (``preprocess``); bad
input gets a 4xx naming the problem. onnxruntime with 1 intra-op thread by default (override:
``--threads`` or ``LOCALAWS_IC_SERVE_THREADS``); torch is never imported.

Hyperparameters
---------------
Names and valid values follow the built-in algorithm's documentation. An unknown name fails
(``ClientError: Unknown hyperparameter ...``); so does any invalid value, naming it.

======================== ============== ============== ===================================
name                     built-in       ours           handling here
======================== ============== ============== ===================================
num_classes              required       required       integer >= 2
num_training_samples     required       required       must equal the train .lst count
image_shape              3,224,224      3,32,32        C in {1, 3}; H, W in [16, 1024];
                                                       images are resized to H x W
num_layers               152            unset          unset: our fast net (below);
                                                       18/34/50/101/152/200: ImageNet
                                                       ResNet (needs H, W >= 32);
                                                       20/32/44/56/110 and any other 6n+2
                                                       in [8, 164]: CIFAR ResNet; else
                                                       fails
epochs                   30             40             honoured
learning_rate            0.1            0.2            honoured (peak rate of the schedule)
mini_batch_size          32             128            honoured
optimizer                sgd            nag            sgd, nag (Nesterov), adam, rmsprop
momentum                 0.9            0.9            sgd/nag; noted as no effect otherwise
weight_decay             0.0001         0.0005         sgd/nag; noted as no effect otherwise
beta_1, beta_2           0.9, 0.999     same           adam (in [0, 1)); else noted
eps                      1e-8           same           adam, rmsprop; else noted
gamma                    0.9            same           rmsprop (decay of squared grads)
lr_scheduler_step        none           none           set: lr *= factor after each listed
                                                       epoch; unset: our schedule (below)
lr_scheduler_factor      0.1            0.1            with lr_scheduler_step; else noted
augmentation_type        none           crop           crop = flip + random translation;
                                                       crop_color adds hue/saturation/
                                                       lightness jitter; crop_color_transform
                                                       adds rotation <= 10 deg, shear <= 0.1,
                                                       aspect change <= 0.25
resize                   none           none           shorter side -> resize, centre crop
                                                       H x W (train and serve); >= H and W
top_k                    none           none           logs/reports top-k accuracy (2..k)
early_stopping           False          False          honoured, on validation accuracy
early_stopping_min_epochs 10            10             with early_stopping; else noted
early_stopping_patience  5              5              with early_stopping; else noted
early_stopping_tolerance 0.0            0.0            relative; else noted
checkpoint_frequency     none           none           extra state dicts in model/; the
                                                       final model is always the last epoch
use_pretrained_model     0              0              1 fails: no weights offline
multi_label              0              0              1 fails: not supported here
use_weighted_loss        0              0              1 noted as no effect (multi-label only)
precision_dtype          float32        float32        float16 noted: trains in float32
kv_store                 none           none           noted: single machine
_tuning_objective_metric -              -              noted (set by SageMaker tuning)
seed                     -              0              ours: torch/numpy seeding
======================== ============== ============== ===================================

Why our defaults differ: the built-in's (ResNet-152 at 224 px) take hours per epoch on a CPU.
With only ``image_shape=3,32,32``, ``num_classes`` and ``num_training_samples`` set (the
reference notebook), the defaults train the fast net below; they were chosen on a split of the
training images only, never on test images.

Default network and recipe (``fastnet``)
----------------------------------------
A fast-CIFAR style net (see ``model.FastNet``): frozen 2x2 patch-whitening convolution
computed from the training images, three conv/max-pool/BatchNorm/GELU groups of 32, 64 and
128 channels, global max-pool, scaled linear head (~0.3 M parameters). Recipe
(``train.Recipe``; not hyperparameters): label smoothing 0.2, lookahead (every 5 steps,
alpha 0.5), learning rate warmed up linearly over the first 20% of the steps then decayed
linearly to 0, weight decay on all parameters, channels-last tensors.
The CIFAR/ImageNet ResNets use the same optimizer and schedule without label smoothing or
lookahead. Final model = last epoch (the built-in keeps the best-validation epoch; we never let
the validation channel pick the model).
"""

FORMAT_VERSION = 1
