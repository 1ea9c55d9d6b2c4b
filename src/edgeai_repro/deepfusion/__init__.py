"""DeepFusion: federated knowledge distillation from heterogeneous on-device LLMs into an MoE."""
