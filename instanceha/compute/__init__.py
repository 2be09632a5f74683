"""The Nova adapter: evacuation and host state through a real Nova (openstacksdk)."""
