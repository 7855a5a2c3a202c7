"""The Airflow DAGs of the side-by-side benchmark (copied into the DAG folder of a throwaway
AIRFLOW_HOME by bench.peers.airflow_peer; parsed by Airflow in its own virtualenv).

Each task runs the same shell command as cronmesh's tasks in ``bench.workflows``: it stamps the
wall clock into ``<task>.start`` as its first action and into ``<task>.end`` as its last.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator

OUT = os.environ.get("PEERS_OUT", "/tmp")
CHAIN = int(os.environ.get("PEERS_CHAIN", "50"))
FANOUT = int(os.environ.get("PEERS_FANOUT", "200"))
STAMP = "date +%s%N > {dir}/{task}.start; date +%s%N > {dir}/{task}.end"
START = datetime(2026, 1, 1)


def stamped(dag: DAG, kind: str, task: str) -> BashOperator:
    cmd = STAMP.format(dir=f"{OUT}/{kind}", task=task)
    return BashOperator(task_id=task, bash_command=cmd, dag=dag)


chain_dag = DAG("peers_chain", schedule=None, start_date=START, catchup=False)
previous = None
for i in range(CHAIN):
    t = stamped(chain_dag, "chain", f"c{i}")
    if previous is not None:
        previous >> t
    previous = t

fanout_dag = DAG("peers_fanout", schedule=None, start_date=START, catchup=False)
root = stamped(fanout_dag, "fanout", "root")
join = stamped(fanout_dag, "fanout", "join")
for i in range(FANOUT):
    root >> stamped(fanout_dag, "fanout", f"l{i}") >> join
