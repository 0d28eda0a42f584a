"""`dfstream explain`: why a face was called fake.

- `gradcam`: where in the face the evidence lies (Grad-CAM on the last spatial convolution);
- `regions`: that evidence named by face region, from MTCNN's five landmarks;
- `kb`: knowledge bases (the built-in passages and `dfstream kb build` over a user's papers);
- `retrieve`: BM25, a dense index when an embedding model is present, hybrid ranking;
- `llm`: an optional OpenAI-compatible chat model, its answer checked against the retrieved passages;
- `report`: the query, the cited explanation, `explanation.md` and `explanation.json`.

Only `gradcam` is imported here (the job's original interface); the others are imported where they are used.
"""

from stream.jobs.explain.gradcam import (HEAT_ALPHA, HEAT_COLORMAP, HEATMAPS_FILE, SUMMARY_FILE, Explanation,
                                         ExplainError, GradCam, explain_top, last_spatial_conv,
                                         write_explanations)

__all__ = ["HEAT_ALPHA", "HEAT_COLORMAP", "HEATMAPS_FILE", "SUMMARY_FILE", "Explanation", "ExplainError", "GradCam",
           "explain_top", "last_spatial_conv", "write_explanations"]
