-- Rooms an application service published in its own room directory, per third-party network
-- (PUT /directory/list/appservice/{networkId}/{roomId}). /publicRooms lists them with
-- third_party_instance_id set to the network, or with include_all_networks.
CREATE TABLE appservice_room_directory (
    -- The id of the application service's registration.
    appservice_id TEXT NOT NULL,
    -- The network (protocol) ID the service gave.
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    PRIMARY KEY (appservice_id, network_id, room_id)
);

CREATE INDEX appservice_room_directory_network ON appservice_room_directory (network_id);
