"""Cross-cutting helpers of the control plane: database, errors, security, request ids."""
