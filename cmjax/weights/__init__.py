"""Reading published PyTorch weights (EDM / ECT network pickles, torch.save files) without torch
and without executing anything from the file, and converting them to cmjax backbones, parameter
trees and preconditioners (see safe_pickle, edm_pickle, edm_preconds)."""
from cmjax.weights.edm_pickle import (EDMNetwork, ImportedNetwork, edm_state_dict,
                                      export_edm_safetensors, load_edm_network, make_model,
                                      read_edm_pickle, to_cmjax)
from cmjax.weights.edm_preconds import VEPreconditioner, VPPreconditioner, preconditioner_from
from cmjax.weights.safe_pickle import (ALLOWED, ModuleRecord, PersistentObject, UnsafePickleError,
                                       WeightsFileError, load_pickle, load_torch_file)
