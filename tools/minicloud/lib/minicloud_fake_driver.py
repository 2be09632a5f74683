"""nova FakeDriver with a *stable* compute-node UUID.

nova.virt.fake.FakeDriver reports a node UUID from oslo's uuidsentinel,
which is random per process, and never writes the persistent
$state_path/compute_id file.  A restarted fake nova-compute therefore dies
with:
  InvalidConfiguration: No local node identity found, but this is not our
  first startup on this host. Refusing to start ...
This subclass does what the libvirt driver does: use (and on first start
create) the local node identity file, so a "fenced" compute can be brought
back later.  Use with: compute_driver = minicloud_fake_driver.StableFakeDriver
(the launcher puts this directory on sys.path).  Give every nova-compute its
own state_path and keep no compute_id file next to the config files.
"""
from nova.virt import fake, node


class StableFakeDriver(fake.FakeDriver):
    def get_available_resource(self, nodename):
        res = super().get_available_resource(nodename)
        if res:
            res['uuid'] = node.get_local_node_uuid()
        return res

    def get_nodenames_by_uuid(self, refresh=False):
        return {node.get_local_node_uuid(): n
                for n in self.get_available_nodes()}
