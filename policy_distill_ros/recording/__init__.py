"""Recording demonstrations: rosbag2 directories with MCAP storage, written and read without ROS.

- `BagWriter` takes serialized (CDR) messages, as a raw subscription delivers them, and never
  decodes them; chunks reach the disk every `flush_period_s`.
- `read_bag` / `bag_info` read such a bag (or any rosbag2 MCAP bag), even one whose recorder was
  killed; `recover` makes a killed bag fully indexed for every other tool.

Specs in use and the teacher's hash travel with the data twice: as metadata.yaml `custom_data`
and as an MCAP metadata record named `policy_distill_ros` at the start of every .mcap file.
"""
