"""The broker plugin (seed 003 §5): a paper exchange and the crash-safe order path.

``paper.PaperBroker`` simulates an exchange; ``service.BrokerService`` turns a
strategy's action into an Order, submits it and keeps Order and Position in line,
``service.reconcile`` repairs what a crash left behind. ``ccxt_adapter.CcxtBroker``
is a live exchange through ccxt (the ``exchange`` extra), behind the same protocol.
"""
