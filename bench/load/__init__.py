"""The locust load test's parts (bench/locustfile.py is the file locust runs):

* ``kafka``      the gateway's Kafka client: requests out, decisions back, correlated by id;
* ``provision``  the run's services and accounts (through ``flows.provision``), the warm-up;
* ``subscriber`` the locust user, one subscriber, and the state its process shares.
"""
