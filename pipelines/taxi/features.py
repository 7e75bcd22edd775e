"""Feature names of the Chicago taxi data and how each one is transformed.

Kept free of TensorFlow imports so that the data tools, the fault generator and tests can use
the same lists as the module files.
"""

LABEL_KEY = "tips"
FARE_KEY = "fare"
# The model predicts whether the tip is more than this fraction of the fare.
BIG_TIP_FRACTION = 0.2

# Scaled to z-scores.
DENSE_FLOAT_FEATURES = ("trip_miles", "fare", "trip_seconds")
# Bucketized into quantiles.
BUCKET_FEATURES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")
BUCKET_COUNT = 10
# Small integer categories used as ids directly: name -> number of ids (largest value + 1).
IDENTITY_FEATURES = {
    "trip_start_hour": 24,
    "trip_start_day": 8,
    "trip_start_month": 13,
    "pickup_community_area": 78,
    "dropoff_community_area": 78,
}
# Census tracts are large, sparse ids: hashed into buckets (no vocabulary pass needed).
HASHED_FEATURES = ("pickup_census_tract", "dropoff_census_tract")
HASH_BUCKETS = 100
CATEGORICAL_INT_FEATURES = tuple(IDENTITY_FEATURES) + HASHED_FEATURES
# Free-text categories, mapped through a vocabulary.
VOCAB_FEATURES = ("payment_type", "company")
VOCAB_SIZE = 1000
OOV_BUCKETS = 10

CATEGORICAL_FEATURES = CATEGORICAL_INT_FEATURES + VOCAB_FEATURES
RAW_FEATURES = DENSE_FLOAT_FEATURES + BUCKET_FEATURES + CATEGORICAL_FEATURES
# Columns that appear in the CSV but are not model inputs.
UNUSED_COLUMNS = ("trip_start_timestamp",)
ALL_COLUMNS = RAW_FEATURES + UNUSED_COLUMNS + (LABEL_KEY,)

# Slices the Evaluator reports and gates on.
SLICE_FEATURES = ("trip_start_hour", "payment_type")


def transformed_name(key: str) -> str:
    return f"{key}_xf"


TRANSFORMED_LABEL = transformed_name("big_tipper")
