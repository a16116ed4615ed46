"""intake's use cases, one class per part of a case, each public method one transaction (load, apply a rule of
``domain``, store, add outbox events):

- ``cases``: register, list, update (``Cases``);
- ``consent``: consent versions (``Consents``);
- ``reads``: reads of a case and the referral service's clearance (``Reads``), by ``domain.disclosure``;
- ``overrides``: risk-to-life overrides (``Overrides``);
- ``erasure``: crypto-shredding, and again after a restore (``Erasure``, ``reapply_erasures``);
- ``keys``: re-sealing what is left in clear, master-key rotation (``Sealing``, ``rewrap_data_keys``);
- ``common``: what they share (``Resources``: database, master keys, event source).

``Deps`` is all of them as ``app.py`` provides them to the routes, the consumers and the job.
"""

from services.intake.service.cases import Cases
from services.intake.service.common import MasterKeys, Resources
from services.intake.service.consent import Consents
from services.intake.service.erasure import Erasure, reapply_erasures
from services.intake.service.keys import Sealing, count_data_keys_not_under, rewrap_data_keys
from services.intake.service.overrides import Overrides
from services.intake.service.reads import Reads

__all__ = ["Cases", "Consents", "Erasure", "MasterKeys", "Overrides", "Reads", "Resources", "Sealing",
           "count_data_keys_not_under", "reapply_erasures", "rewrap_data_keys"]
