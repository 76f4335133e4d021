"""What runs between the measured state and the arm: the policy's control loop
(control), the guard pipeline every target passes (guards) and the arms' kinematics (kinematics)."""
