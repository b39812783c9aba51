"""Spoolside's rule engine: the ``PYME.cluster.rules`` API over real cluster clients (no Qt).

Importing does no work: no network, no threads. Typical use::

    from rules import Cluster, LocalisationRuleFactory, RecipeRuleFactory
    cluster = Cluster(ruleserver="http://127.0.0.1:15346", dataserver="http://127.0.0.1:15348")
    step1 = LocalisationRuleFactory(analysisMetadata={"Analysis.FitModule": "LatGaussFitFR"})
    step1.chain(RecipeRuleFactory(recipeURI="PYME-CLUSTER:///RECIPES/render.yaml"))
    rule = step1.get_rule({"seriesName": "PYME-CLUSTER://lab/u/s1.pcs"}).push(cluster)
    rule.join()
"""
from . import errors
from .connection import Cluster, default_cluster, set_default_cluster
from .errors import ClusterError, ClusterUnreachable, ProtocolError, RequestRefused
from .factories import (
                        LocalisationRuleFactory,
                        RecipeRuleFactory,
                        RuleFactory,
                        SpoolLocalLocalizationRuleFactory,
)
from .localisation import LocalisationRule, SpoolLocalLocalizationRule, verify_cluster_results_filename
from .metadata import MetaDataHandler
from .recipe import RecipeRule
from .rule import NoNewTasks, Rule
from .watchers import RuleGroupWatcher, RuleStatus, RuleWatcher

__all__ = [
    "Rule", "RuleFactory", "RecipeRule", "RecipeRuleFactory", "LocalisationRule",
    "LocalisationRuleFactory", "SpoolLocalLocalizationRule", "SpoolLocalLocalizationRuleFactory",
    "NoNewTasks", "verify_cluster_results_filename", "RuleWatcher", "RuleGroupWatcher", "RuleStatus",
    "Cluster", "set_default_cluster", "default_cluster", "MetaDataHandler", "errors",
    "ClusterError", "ClusterUnreachable", "RequestRefused", "ProtocolError",
]
