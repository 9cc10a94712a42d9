// Stand-in for tensorflow/cc/saved_model/tag_constants.h, which the TensorFlow wheel
// does not ship. The TF backend's TRITONTF_* layer (built by ensemble/native/tf_shim.py)
// needs only the SavedModel tag names; these are the values TensorFlow's Python API
// writes into a SavedModel (tf.saved_model.SERVING == "serve", and so on).
#ifndef ENSEMBLE_NATIVE_TAG_CONSTANTS_H_
#define ENSEMBLE_NATIVE_TAG_CONSTANTS_H_

namespace tensorflow {

inline constexpr char kSavedModelTagServe[] = "serve";
inline constexpr char kSavedModelTagTrain[] = "train";
inline constexpr char kSavedModelTagGpu[] = "gpu";
inline constexpr char kSavedModelTagTpu[] = "tpu";

}  // namespace tensorflow

#endif  // ENSEMBLE_NATIVE_TAG_CONSTANTS_H_
